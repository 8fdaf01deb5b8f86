//! Cutting text to a byte budget without splitting a character.

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn head(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// The longest suffix of `s` of at most `max` bytes that starts on a character boundary.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

#[cfg(test)]
mod tests {
    #[test]
    fn heads_end_on_character_boundaries() {
        assert_eq!(super::head("héllo", 2), "h");
        assert_eq!(super::head("héllo", 3), "hé");
        assert_eq!(super::head("hi", 10), "hi");
        assert_eq!(super::head("😀", 3), "");
        assert_eq!(super::tail("héllo", 4), "llo");
        assert_eq!(super::tail("héllo", 5), "éllo");
        assert_eq!(super::tail("hi", 10), "hi");
    }
}
