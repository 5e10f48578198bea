//! Quiet hours: a window of the recipient's local day (22:00–08:00, say) in which
//! non-critical messages wait; they go when the window ends. Critical messages (security,
//! orders) never wait. Times are wall-clock times in the recipient's IANA time zone, so the
//! window follows daylight saving time; a window that ends at a time the clocks skip ends at
//! the first instant after the gap.

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A daily window, `HH:MM` to `HH:MM` local time; it may span midnight. Equal ends: no window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// When it begins, `HH:MM`.
    #[serde(with = "hhmm")]
    #[schema(value_type = String, example = "22:00")]
    pub start: NaiveTime,
    /// When it ends, `HH:MM` (not included).
    #[serde(with = "hhmm")]
    #[schema(value_type = String, example = "08:00")]
    pub end: NaiveTime,
}

mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        NaiveTime::parse_from_str(&text, "%H:%M")
            .map_err(|_| D::Error::custom(format!("{text:?} is not a time of day (HH:MM)")))
    }
}

impl QuietHours {
    /// Whether local time `t` falls in the window.
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// When a non-critical message written at `now` may go for someone in `tz`: `None` at
    /// once, or the end of the window they are in.
    pub fn release_at(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&tz);
        if self.start == self.end || !self.contains(local.time()) {
            return None;
        }
        let mut day = local.date_naive();
        if local.time() >= self.end {
            day = day.checked_add_days(Days::new(1))?;
        }
        let end = day.and_time(self.end);
        // The end as the clocks show it; in a skipped hour, the first minute after the gap.
        let resolved = (0..=180).find_map(|minutes| {
            tz.from_local_datetime(&(end + chrono::Duration::minutes(minutes)))
                .earliest()
        })?;
        Some(resolved.with_timezone(&Utc))
    }
}

/// The time zone `name` (IANA, `Europe/Madrid`), if known.
pub fn zone(name: &str) -> Option<Tz> {
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(start: &str, end: &str) -> QuietHours {
        serde_json::from_value(serde_json::json!({"start": start, "end": end})).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_window_over_midnight_holds_until_its_end_the_next_morning() {
        let night = hours("22:00", "08:00");
        let madrid = zone("Europe/Madrid").unwrap();
        // 23:30 in Madrid (CET, UTC+1) → 08:00 next day = 07:00 UTC.
        assert_eq!(
            night.release_at(madrid, utc("2026-12-02T22:30:00Z")),
            Some(utc("2026-12-03T07:00:00Z"))
        );
        // 06:00 in Madrid → 08:00 the same day.
        assert_eq!(
            night.release_at(madrid, utc("2026-12-03T05:00:00Z")),
            Some(utc("2026-12-03T07:00:00Z"))
        );
        // 12:00 in Madrid: outside.
        assert_eq!(night.release_at(madrid, utc("2026-12-03T11:00:00Z")), None);
        // The end itself is outside.
        assert_eq!(night.release_at(madrid, utc("2026-12-03T07:00:00Z")), None);
    }

    #[test]
    fn a_daytime_window_and_an_empty_one() {
        let lunch = hours("13:00", "15:00");
        let tokyo = zone("Asia/Tokyo").unwrap();
        // 14:00 in Tokyo (UTC+9) → 15:00 = 06:00 UTC.
        assert_eq!(
            lunch.release_at(tokyo, utc("2026-12-03T05:00:00Z")),
            Some(utc("2026-12-03T06:00:00Z"))
        );
        assert_eq!(
            hours("09:00", "09:00").release_at(tokyo, utc("2026-12-03T00:00:00Z")),
            None
        );
    }

    #[test]
    fn the_window_follows_daylight_saving_time() {
        let night = hours("22:00", "08:00");
        let madrid = zone("Europe/Madrid").unwrap();
        // In summer Madrid is UTC+2: 08:00 is 06:00 UTC.
        assert_eq!(
            night.release_at(madrid, utc("2026-07-01T21:00:00Z")),
            Some(utc("2026-07-02T06:00:00Z"))
        );
        // A window ending at 02:30 on the night clocks jump from 02:00 to 03:00 (29 March
        // 2026 in Madrid) ends at 03:00 local, 01:00 UTC.
        let short = hours("01:00", "02:30");
        assert_eq!(
            short.release_at(madrid, utc("2026-03-29T00:30:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn bad_times_and_zones_are_refused() {
        assert!(
            serde_json::from_value::<QuietHours>(
                serde_json::json!({"start": "25:00", "end": "08:00"})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<QuietHours>(serde_json::json!({"start": "22:00"})).is_err()
        );
        assert!(zone("Mars/Olympus").is_none());
        assert!(zone("UTC").is_some());
    }
}
