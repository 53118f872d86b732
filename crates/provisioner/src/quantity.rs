//! Storage quantities (`1Gi`, `500M`, `1.5Ti`, `1e9`) to bytes.

/// Bytes in a quantity string, rounded up to a whole byte; `None` when it is not a quantity.
pub fn to_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let value: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = (value * multiplier).ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes <= u64::MAX as f64).then_some(bytes as u64)
}

/// A human figure for messages: `1.5Gi`, `200Mi`, `512`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if unit.is_empty() {
        return bytes.to_string();
    }
    let text = format!("{value:.1}");
    format!("{}{unit}", text.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_exponent_quantities() {
        assert_eq!(to_bytes("1Gi"), Some(1 << 30));
        assert_eq!(to_bytes("500M"), Some(500_000_000));
        assert_eq!(to_bytes("1.5Ki"), Some(1536));
        assert_eq!(to_bytes("1e3"), Some(1000));
        assert_eq!(to_bytes("42"), Some(42));
        assert_eq!(to_bytes("1500m"), Some(2));
    }

    #[test]
    fn rejects_text_that_is_not_a_quantity() {
        assert_eq!(to_bytes("lots"), None);
        assert_eq!(to_bytes("1Gb"), None);
        assert_eq!(to_bytes(""), None);
    }

    #[test]
    fn prints_sizes_the_way_users_write_them() {
        assert_eq!(human(1 << 30), "1Gi");
        assert_eq!(human(3 << 29), "1.5Gi");
        assert_eq!(human(100), "100");
    }
}
