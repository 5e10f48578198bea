//! The country of an IP address, for the fraud rules' country check, from a CSV of address
//! ranges: `first,last,country` per line, IPv4 or IPv6 — the format of DB-IP's free "IP to
//! Country Lite" download (CC BY 4.0, monthly at db-ip.com) and of most range exports. Set
//! `PAYMENTS_GEOIP_CSV` to its path; without one, addresses have no country and the rule
//! compares only the card's country with the billing address's.
//!
//! Read by hand rather than with a GeoIP crate: the crates read MaxMind's binary format,
//! whose free database needs an account to download; a sorted range table and a binary search
//! are all a country lookup needs.

use std::{net::IpAddr, path::Path};

/// Address ranges and their countries, sorted, IPv4 mapped into IPv6.
#[derive(Debug, Clone, Default)]
pub struct GeoIp {
    ranges: Vec<(u128, u128, [u8; 2])>,
}

/// Why a range file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// The file.
    #[error("reading {path}: {source}")]
    Read {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line.
    #[error(
        "{path} line {line}: {why} (expected `first,last,country`, e.g. `1.0.0.0,1.0.0.255,AU`)"
    )]
    Line {
        /// Which file.
        path: String,
        /// 1-based.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl GeoIp {
    /// No ranges: no address has a country.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The ranges in the CSV file at `path`.
    pub fn load(path: &Path) -> Result<Self, GeoIpError> {
        let text = std::fs::read_to_string(path).map_err(|source| GeoIpError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, why)| GeoIpError::Line {
            path: path.display().to_string(),
            line,
            why,
        })
    }

    /// The ranges in CSV `text`; the failing line (1-based) and why.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut ranges = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line
                .split(',')
                .map(|f| f.trim().trim_matches('"'))
                .collect();
            let [first, last, country, ..] = fields[..] else {
                return Err((n + 1, "fewer than three fields".into()));
            };
            let parse = |f: &str| {
                f.parse::<IpAddr>()
                    .map_err(|_| (n + 1, format!("{f:?} is not an IP address")))
            };
            let (first, last) = (parse(first)?, parse(last)?);
            if first.is_ipv4() != last.is_ipv4() || key(first) > key(last) {
                return Err((n + 1, format!("{first}..{last} is not a range")));
            }
            let code = country.as_bytes();
            if code.len() != 2 || !code.iter().all(u8::is_ascii_alphabetic) {
                return Err((
                    n + 1,
                    format!("{country:?} is not a two-letter country code"),
                ));
            }
            // DB-IP marks unassigned space `ZZ`: no country.
            if country.eq_ignore_ascii_case("ZZ") {
                continue;
            }
            ranges.push((
                key(first),
                key(last),
                [code[0].to_ascii_uppercase(), code[1].to_ascii_uppercase()],
            ));
        }
        ranges.sort_unstable();
        Ok(Self { ranges })
    }

    /// How many ranges are known.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The country of `ip` (ISO 3166-1 alpha-2), if a range holds it.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let k = key(ip);
        let i = self.ranges.partition_point(|(first, _, _)| *first <= k);
        let (_, last, code) = self.ranges.get(i.checked_sub(1)?)?;
        (k <= *last).then(|| String::from_utf8_lossy(code).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\
# first,last,country
1.0.0.0,1.0.0.255,AU
\"2.16.0.0\",\"2.16.255.255\",\"es\"
81.0.0.0,81.255.255.255,FR
192.168.0.0,192.168.255.255,ZZ
2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,DE
";

    #[test]
    fn addresses_are_found_in_their_ranges_and_nowhere_else() {
        let geo = GeoIp::parse(CSV).unwrap();
        let at = |ip: &str| geo.country(ip.parse().unwrap());
        assert_eq!(at("1.0.0.0").as_deref(), Some("AU"));
        assert_eq!(at("1.0.0.255").as_deref(), Some("AU"));
        assert_eq!(at("1.0.1.0"), None);
        assert_eq!(at("2.16.4.20").as_deref(), Some("ES"), "quotes and case");
        assert_eq!(at("81.2.3.4").as_deref(), Some("FR"));
        assert_eq!(at("192.168.1.1"), None, "ZZ is no country");
        assert_eq!(at("2001:db8::1").as_deref(), Some("DE"));
        assert_eq!(at("2001:db9::1"), None);
        assert_eq!(at("0.0.0.1"), None, "below every range");
        assert_eq!(at("255.255.255.255"), None, "above every range");
        assert_eq!(geo.len(), 4);
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(
            GeoIp::parse("1.0.0.0,1.0.0.255,AU\nx,1.0.0.1,AU")
                .unwrap_err()
                .0,
            2
        );
        assert!(
            GeoIp::parse("1.0.0.9,1.0.0.1,AU")
                .unwrap_err()
                .1
                .contains("not a range")
        );
        assert!(GeoIp::parse("1.0.0.0,::1,AU").is_err(), "mixed families");
        assert!(GeoIp::parse("1.0.0.0,1.0.0.1,AUS").is_err());
        assert!(GeoIp::parse("1.0.0.0,1.0.0.1").is_err());
        assert!(GeoIp::empty().country("1.2.3.4".parse().unwrap()).is_none());
    }
}
