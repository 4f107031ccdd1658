//! Lower-case hex, for digests and tags in signatures, audit records and Redis keys.
//!
//! A lookup table rather than `format!("{:02x}")` per byte, which costs an allocation per
//! byte on the request path.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex, two digits a byte.
pub fn lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let [high, low] = digit_pair(b);
        out.push(char::from(high));
        out.push(char::from(low));
    }
    out
}

/// One byte's two hex digits.
fn digit_pair(b: u8) -> [u8; 2] {
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]
}

/// A 32-byte digest or tag as its 64 lower-case hex digits, without allocating (read them
/// with [`digits_str`]).
pub fn lower_32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&digit_pair(b));
    }
    out
}

/// Digits made by [`lower_32`] as text.
pub fn digits_str(digits: &[u8; 64]) -> &str {
    // Hex digits are ASCII; the fallback is never taken.
    std::str::from_utf8(digits).unwrap_or_default()
}

/// Decodes hex (either case). `None` on odd length or a non-hex character.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_size_and_growing_hex_agree_and_decode_back() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
        let digits = super::lower_32(&bytes);
        assert_eq!(super::digits_str(&digits), super::lower(&bytes));
        assert_eq!(super::decode(super::digits_str(&digits)).unwrap(), bytes);
    }
}
