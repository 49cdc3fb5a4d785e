//! The key-list query (`GET/HEAD /api/v2/keys`): limit, offset, state, extractable,
//! search, sort and filter, parsed and validated here; the store turns it into a query.

use crate::error::{Error, Result};
use crate::model::KeyState;
use crate::timefmt::{self, Timestamp};

pub const DEFAULT_LIMIT: u32 = 200;
pub const MAX_LIMIT: u32 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    Id,
    State,
    Extractable,
    Imported,
    CreationDate,
    LastUpdateDate,
    LastRotateDate,
    DeletionDate,
    ExpirationDate,
}

impl SortField {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "id" => Self::Id,
            "state" => Self::State,
            "extractable" => Self::Extractable,
            "imported" => Self::Imported,
            "creationDate" => Self::CreationDate,
            "lastUpdateDate" => Self::LastUpdateDate,
            "lastRotateDate" => Self::LastRotateDate,
            "deletionDate" => Self::DeletionDate,
            "expirationDate" => Self::ExpirationDate,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterField {
    CreationDate,
    DeletionDate,
    ExpirationDate,
    LastRotateDate,
    LastUpdateDate,
    Extractable,
    State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    Time(Timestamp),
    Bool(bool),
    State(KeyState),
    /// `state=1,2`: any of these.
    States(Vec<KeyState>),
    /// The keyword `none`: the property is unset.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: FilterField,
    pub op: Op,
    pub value: FilterValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Search {
    pub text: String,
    pub not: bool,
    pub exact: bool,
    pub in_name: bool,
    pub in_alias: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKeys {
    pub limit: u32,
    pub offset: u64,
    pub states: Vec<KeyState>,
    pub extractable: Option<bool>,
    pub key_ring: Option<String>,
    pub search: Option<Search>,
    pub sort: Vec<(SortField, bool)>,
    pub filters: Vec<Filter>,
}

impl Default for ListKeys {
    fn default() -> Self {
        ListKeys {
            limit: DEFAULT_LIMIT,
            offset: 0,
            states: vec![
                KeyState::PreActivation,
                KeyState::Active,
                KeyState::Suspended,
                KeyState::Deactivated,
            ],
            extractable: None,
            key_ring: None,
            search: None,
            sort: vec![(SortField::Id, false)],
            filters: vec![],
        }
    }
}

/// Parses `limit` (1..=max) the way every list endpoint does.
pub fn parse_limit(v: &str, max: u32) -> Result<u32> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Error::invalid_query(
            "limit",
            &format!("an integer between 1 and {max} (inclusive)"),
        )),
    }
}

pub fn parse_offset(v: &str) -> Result<u64> {
    match v.trim().parse::<u64>() {
        Ok(n) if n <= i64::MAX as u64 => Ok(n),
        _ => Err(Error::invalid_query("offset", "a non-negative integer")),
    }
}

pub fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::invalid_query(name, "true or false")),
    }
}

pub fn parse_states(v: &str) -> Result<Option<Vec<KeyState>>> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: u8 = part.parse().map_err(|_| {
            Error::invalid_query("state", "a comma-separated list of 0, 1, 2, 3 and 5")
        })?;
        let s = KeyState::try_from(n).map_err(|_| {
            Error::invalid_query("state", "a comma-separated list of 0, 1, 2, 3 and 5")
        })?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

fn parse_search(raw: &str) -> Result<Search> {
    let mut s = Search::default();
    let mut rest = raw;
    loop {
        if let Some(r) = rest.strip_prefix("escape:") {
            rest = r;
            break;
        } else if let Some(r) = rest.strip_prefix("not:") {
            s.not = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("exact:") {
            s.exact = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("alias:") {
            s.in_alias = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("name:") {
            s.in_name = true;
            rest = r;
        } else {
            break;
        }
    }
    // The Go client joins search terms with a trailing comma.
    let rest = rest.trim_end_matches(',');
    if !s.in_alias && !s.in_name {
        s.in_alias = true;
        s.in_name = true;
    }
    if rest.is_empty() || rest.len() > 256 {
        return Err(Error::invalid_query(
            "search",
            "a non-empty string of at most 256 characters",
        ));
    }
    s.text = rest.to_string();
    Ok(s)
}

fn parse_sort(raw: &str) -> Result<Vec<(SortField, bool)>> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (desc, name) = match part.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, part),
        };
        let field = SortField::parse(name).ok_or_else(|| {
            Error::invalid_query("sort", "a comma-separated list of id, state, extractable, imported, creationDate, lastUpdateDate, lastRotateDate, deletionDate, expirationDate, each optionally prefixed with -")
        })?;
        out.push((field, desc));
    }
    if out.is_empty() {
        out.push((SortField::Id, false));
    }
    Ok(out)
}

/// Splits a filter on spaces outside double quotes.
fn filter_terms(raw: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    terms.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        terms.push(cur);
    }
    terms
}

fn parse_filter(raw: &str) -> Result<Vec<Filter>> {
    let bad = |why: &str| Error::invalid_query("filter", why);
    let mut out: Vec<Filter> = Vec::new();
    for term in filter_terms(raw) {
        let (prop, value) = term.split_once('=').ok_or_else(|| {
            bad("space-separated terms of the form property=value or property=op:value")
        })?;
        let field = match prop {
            "creationDate" => FilterField::CreationDate,
            "deletionDate" => FilterField::DeletionDate,
            "expirationDate" => FilterField::ExpirationDate,
            "lastRotateDate" => FilterField::LastRotateDate,
            "lastUpdateDate" => FilterField::LastUpdateDate,
            "extractable" => FilterField::Extractable,
            "state" => FilterField::State,
            _ => return Err(bad("terms on creationDate, deletionDate, expirationDate, lastRotateDate, lastUpdateDate, extractable or state")),
        };
        let (op, value) = match value.split_once(':') {
            Some(("lt", v)) => (Op::Lt, v),
            Some(("lte", v)) => (Op::Lte, v),
            Some(("gt", v)) => (Op::Gt, v),
            Some(("gte", v)) => (Op::Gte, v),
            _ => (Op::Eq, value),
        };
        let value = match field {
            _ if value == "none" => FilterValue::Absent,
            FilterField::Extractable => FilterValue::Bool(parse_bool("filter", value)?),
            FilterField::State => {
                let states: Vec<KeyState> = value
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<u8>()
                            .ok()
                            .and_then(|n| KeyState::try_from(n).ok())
                            .ok_or_else(|| {
                                bad("states of 0, 1, 2, 3 or 5 (comma-separated with =)")
                            })
                    })
                    .collect::<Result<_>>()?;
                match states.as_slice() {
                    [one] => FilterValue::State(*one),
                    _ if op == Op::Eq => FilterValue::States(states),
                    _ => return Err(bad("a single state with lt, lte, gt or gte")),
                }
            }
            _ => FilterValue::Time(
                timefmt::parse(value).ok_or_else(|| bad("dates in RFC 3339 format"))?,
            ),
        };
        if value == FilterValue::Absent && op != Op::Eq {
            return Err(bad("the keyword none only with ="));
        }
        if out.iter().filter(|f| f.field == field).count() >= 3 {
            return Err(bad("at most 3 terms per property"));
        }
        out.push(Filter { field, op, value });
    }
    Ok(out)
}

impl ListKeys {
    /// Builds the query from decoded query pairs and the `X-Kms-Key-Ring` header.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        key_ring: Option<String>,
    ) -> Result<Self> {
        let mut q = ListKeys {
            key_ring,
            ..Default::default()
        };
        let mut state_param = false;
        let mut extractable_param = false;
        for (name, value) in pairs {
            match name {
                "limit" => q.limit = parse_limit(value, MAX_LIMIT)?,
                "offset" => q.offset = parse_offset(value)?,
                "state" => {
                    if let Some(states) = parse_states(value)? {
                        q.states = states;
                        state_param = true;
                    }
                }
                "extractable" if !value.is_empty() => {
                    q.extractable = Some(parse_bool("extractable", value)?);
                    extractable_param = true;
                }
                "search" if !value.is_empty() => q.search = Some(parse_search(value)?),
                "sort" if !value.is_empty() => q.sort = parse_sort(value)?,
                "filter" if !value.is_empty() => q.filters = parse_filter(value)?,
                _ => {}
            }
        }
        let filters_state = q.filters.iter().any(|f| f.field == FilterField::State);
        let filters_extractable = q
            .filters
            .iter()
            .any(|f| f.field == FilterField::Extractable);
        if (filters_state && state_param) || (filters_extractable && extractable_param) {
            return Err(Error::invalid_query(
                "filter",
                "free of state/extractable when those are given as their own parameters",
            ));
        }
        if filters_state {
            // The filter decides which states are listed, deleted keys included.
            q.states = vec![
                KeyState::PreActivation,
                KeyState::Active,
                KeyState::Suspended,
                KeyState::Deactivated,
                KeyState::Destroyed,
            ];
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_empty_state() {
        let q = ListKeys::from_query([("state", "")], None).unwrap();
        assert_eq!(q, ListKeys::default());
        let q = ListKeys::from_query(
            [("state", "1,5"), ("limit", "10"), ("extractable", "false")],
            None,
        )
        .unwrap();
        assert_eq!(q.states, vec![KeyState::Active, KeyState::Destroyed]);
        assert_eq!(q.limit, 10);
        assert_eq!(q.extractable, Some(false));
    }

    #[test]
    fn rejects_bad_values() {
        for (k, v) in [
            ("limit", "0"),
            ("limit", "5001"),
            ("limit", "x"),
            ("offset", "-1"),
            ("state", "4"),
            ("sort", "bogus"),
            ("filter", "garbage"),
            ("extractable", "maybe"),
        ] {
            assert!(ListKeys::from_query([(k, v)], None).is_err(), "{k}={v}");
        }
        assert!(ListKeys::from_query([("state", "1"), ("filter", "state=1")], None).is_err());
    }

    #[test]
    fn search_sort_filter() {
        let q = ListKeys::from_query(
            [
                ("search", "not:exact:alias:foo"),
                ("sort", "-creationDate,id"),
                (
                    "filter",
                    "creationDate=gt:\"2020-01-01T00:00:00Z\" expirationDate=none",
                ),
            ],
            None,
        )
        .unwrap();
        let s = q.search.unwrap();
        assert!(s.not && s.exact && s.in_alias && !s.in_name);
        assert_eq!(s.text, "foo");
        assert_eq!(
            q.sort,
            vec![(SortField::CreationDate, true), (SortField::Id, false)]
        );
        assert_eq!(q.filters.len(), 2);
        assert_eq!(q.filters[1].value, FilterValue::Absent);
        let q = ListKeys::from_query([("filter", " state=1,2")], None).unwrap();
        assert_eq!(
            q.filters[0].value,
            FilterValue::States(vec![KeyState::Active, KeyState::Suspended])
        );
        assert!(ListKeys::from_query([("filter", "state=lt:1,2")], None).is_err());
        let s = ListKeys::from_query([("search", "escape:not:x")], None)
            .unwrap()
            .search
            .unwrap();
        assert_eq!(s.text, "not:x");
        assert!(!s.not);
    }
}
