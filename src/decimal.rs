//! Decimal text from integers, for numbers written on every reply (the overhead and
//! rate-limit reset headers): integer arithmetic instead of float formatting.

/// `n` thousandths with three decimals: 155 → `0.155`, 12000 → `12.000`.
pub fn thousandths(n: u64) -> String {
    let mut text = String::with_capacity(24);
    text.push_str(itoa::Buffer::new().format(n / 1000));
    text.push('.');
    let frac = n % 1000;
    for digit in [frac / 100, frac / 10 % 10, frac % 10] {
        // A single decimal digit.
        text.push(char::from(b'0' + digit as u8));
    }
    text
}

/// [`thousandths`] without trailing zeros (and without the point when nothing follows
/// it): 1500 → `1.5`, 1000 → `1`, the shortest text a float of the same value prints.
pub fn thousandths_trimmed(n: u64) -> String {
    let mut text = thousandths(n);
    let kept = text.trim_end_matches('0').trim_end_matches('.').len();
    text.truncate(kept);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_three_decimals_and_trims_them() {
        assert_eq!(thousandths(0), "0.000");
        assert_eq!(thousandths(155), "0.155");
        assert_eq!(thousandths(12_000), "12.000");
        assert_eq!(thousandths(1_005), "1.005");
        assert_eq!(thousandths_trimmed(0), "0");
        assert_eq!(thousandths_trimmed(1_500), "1.5");
        assert_eq!(thousandths_trimmed(10_000), "10");
        assert_eq!(thousandths_trimmed(59_050), "59.05");
    }
}
