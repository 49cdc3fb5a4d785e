//! Timestamps are unix seconds in the model and RFC 3339 UTC (`…Z`, second
//! precision) on the wire, as Key Protect emits them.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub type Timestamp = i64;

pub fn format(ts: Timestamp) -> String {
    let dt = OffsetDateTime::from_unix_timestamp(ts).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Parses RFC 3339 (any offset, optional fraction) into unix seconds.
pub fn parse(s: &str) -> Option<Timestamp> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(|d| d.unix_timestamp())
}

pub fn now() -> Timestamp {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_second_precision() {
        let ts = parse("2020-03-12T03:37:32Z").unwrap();
        assert_eq!(format(ts), "2020-03-12T03:37:32Z");
        assert_eq!(parse("2020-03-12T04:37:32.5+01:00"), Some(ts));
        assert_eq!(parse("yesterday"), None);
    }
}
