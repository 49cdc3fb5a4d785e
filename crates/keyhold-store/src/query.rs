//! SQL for the key-list query, shared by the SQLite and PostgreSQL stores; the
//! dialect decides placeholders and the few functions that differ.

use keyhold_core::list::{FilterField, FilterValue, ListKeys, Op, SortField};
use keyhold_core::timefmt::Timestamp;
use keyhold_core::validate::is_uuid;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// A `WHERE` clause with its parameters, numbered from 1.
pub(crate) struct Where {
    pub clause: String,
    pub params: Vec<Param>,
}

impl Dialect {
    fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// Case-insensitive substring test.
    fn contains(self, haystack: &str, needle: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr(lower({haystack}), lower({needle})) > 0"),
            Dialect::Postgres => format!("strpos(lower({haystack}), lower({needle})) > 0"),
        }
    }
}

/// The tables and indexes, as SQLite names the types.
const SCHEMA_SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (hash BLOB PRIMARY KEY, id TEXT NOT NULL, principal_id TEXT NOT NULL,
    principal_kind TEXT NOT NULL, account_id TEXT NOT NULL, name TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    instance_id TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, state INTEGER NOT NULL,
    extractable INTEGER NOT NULL, imported INTEGER NOT NULL, key_ring TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, rotated_at INTEGER, deleted_at INTEGER,
    expiration INTEGER, revision INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (instance_id, id));
CREATE INDEX IF NOT EXISTS keys_by_ring ON keys (instance_id, key_ring);
CREATE INDEX IF NOT EXISTS keys_by_deletion ON keys (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS key_versions (
    instance_id TEXT NOT NULL, key_id TEXT NOT NULL, seq INTEGER NOT NULL, version_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, blob BLOB NOT NULL, PRIMARY KEY (instance_id, key_id, seq));
CREATE UNIQUE INDEX IF NOT EXISTS key_versions_by_id ON key_versions (version_id);
CREATE TABLE IF NOT EXISTS aliases (instance_id TEXT NOT NULL, alias TEXT NOT NULL, key_id TEXT NOT NULL,
    PRIMARY KEY (instance_id, alias));
CREATE INDEX IF NOT EXISTS aliases_by_key ON aliases (instance_id, key_id);
CREATE TABLE IF NOT EXISTS key_rings (instance_id TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (instance_id, id));
CREATE TABLE IF NOT EXISTS registrations (instance_id TEXT NOT NULL, key_id TEXT NOT NULL, crn TEXT NOT NULL,
    prevent_deletion INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (instance_id, key_id, crn));
CREATE INDEX IF NOT EXISTS registrations_by_crn ON registrations (instance_id, crn);
CREATE TABLE IF NOT EXISTS instance_policies (instance_id TEXT NOT NULL, policy_type TEXT NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (instance_id, policy_type));
CREATE TABLE IF NOT EXISTS iam_objects (account_id TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
    refs TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (account_id, kind, id));
CREATE INDEX IF NOT EXISTS api_keys_by_account ON api_keys (account_id, id);
CREATE TABLE IF NOT EXISTS import_tokens (instance_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instance_bindings (crypto_id TEXT NOT NULL, kms_id TEXT NOT NULL,
    PRIMARY KEY (crypto_id, kms_id));
CREATE TABLE IF NOT EXISTS authorizations (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, doc TEXT NOT NULL);
"#;

/// The schema for a dialect: the same tables, with PostgreSQL's type names there.
pub(crate) fn schema(dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => SCHEMA_SQLITE.to_string(),
        Dialect::Postgres => SCHEMA_SQLITE
            .replace("INTEGER", "BIGINT")
            .replace("BLOB", "BYTEA"),
    }
}

struct Builder {
    dialect: Dialect,
    params: Vec<Param>,
}

impl Builder {
    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        self.dialect.placeholder(self.params.len())
    }
}

/// The state a list query sees: expired Active/Suspended keys are Deactivated.
fn effective_state(now: &str) -> String {
    format!("(CASE WHEN state IN (1,2) AND expiration IS NOT NULL AND expiration <= {now} THEN 3 ELSE state END)")
}

fn sort_column(f: SortField, state: &str) -> String {
    match f {
        SortField::Id => "id",
        SortField::State => return state.to_string(),
        SortField::Extractable => "extractable",
        SortField::Imported => "imported",
        SortField::CreationDate => "created_at",
        SortField::LastUpdateDate => "updated_at",
        SortField::LastRotateDate => "rotated_at",
        SortField::DeletionDate => "deleted_at",
        SortField::ExpirationDate => "expiration",
    }
    .to_string()
}

fn filter_column(f: FilterField, state: &str) -> String {
    match f {
        FilterField::CreationDate => "created_at",
        FilterField::DeletionDate => "deleted_at",
        FilterField::ExpirationDate => "expiration",
        FilterField::LastRotateDate => "rotated_at",
        FilterField::LastUpdateDate => "updated_at",
        FilterField::Extractable => "extractable",
        FilterField::State => return state.to_string(),
    }
    .to_string()
}

/// The `WHERE` clause selecting the keys of `q` in the `keys` table.
pub(crate) fn list_where(
    dialect: Dialect,
    instance_id: &str,
    q: &ListKeys,
    now: Timestamp,
) -> Where {
    let mut b = Builder {
        dialect,
        params: Vec::new(),
    };
    let inst = b.bind(Param::Text(instance_id.into()));
    let now = b.bind(Param::Int(now));
    let state = effective_state(&now);
    let mut clauses = vec![format!("instance_id = {inst}")];
    let states: Vec<String> = q.states.iter().map(|s| u8::from(*s).to_string()).collect();
    clauses.push(format!("{state} IN ({})", states.join(",")));
    if let Some(e) = q.extractable {
        clauses.push(format!("extractable = {}", e as i64));
    }
    if let Some(ring) = &q.key_ring {
        let p = b.bind(Param::Text(ring.clone()));
        clauses.push(format!("key_ring = {p}"));
    }
    for f in &q.filters {
        let col = filter_column(f.field, &state);
        let value = match &f.value {
            FilterValue::Absent => {
                clauses.push(format!("{col} IS NULL"));
                continue;
            }
            FilterValue::Time(t) => *t,
            FilterValue::Bool(v) => *v as i64,
            FilterValue::State(s) => u8::from(*s) as i64,
            FilterValue::States(list) => {
                let states: Vec<String> = list.iter().map(|s| u8::from(*s).to_string()).collect();
                clauses.push(format!("{col} IN ({})", states.join(",")));
                continue;
            }
        };
        let p = b.bind(Param::Int(value));
        let op = match f.op {
            Op::Eq => "=",
            Op::Lt => "<",
            Op::Lte => "<=",
            Op::Gt => ">",
            Op::Gte => ">=",
        };
        clauses.push(format!("{col} {op} {p}"));
    }
    if let Some(s) = &q.search {
        let p = b.bind(Param::Text(s.text.clone()));
        let mut parts = Vec::new();
        if s.in_name {
            parts.push(if s.exact {
                format!("name = {p}")
            } else {
                dialect.contains("name", &p)
            });
        }
        if s.in_alias {
            let m = if s.exact {
                format!("a.alias = {p}")
            } else {
                dialect.contains("a.alias", &p)
            };
            parts.push(format!(
                "EXISTS (SELECT 1 FROM aliases a WHERE a.instance_id = keys.instance_id AND a.key_id = keys.id AND {m})"
            ));
        }
        if is_uuid(&s.text) {
            parts.push(format!("id = lower({p})"));
        }
        let any = parts.join(" OR ");
        clauses.push(if s.not {
            format!("NOT ({any})")
        } else {
            format!("({any})")
        });
    }
    Where {
        clause: clauses.join(" AND "),
        params: b.params,
    }
}

/// `ORDER BY …, LIMIT, OFFSET` for a key list, with `id` as the final tie-breaker.
pub(crate) fn order_and_page(q: &ListKeys, now_placeholder: &str) -> String {
    let state = effective_state(now_placeholder);
    let order: Vec<String> = q
        .sort
        .iter()
        .map(|(f, desc)| {
            format!(
                "{} {}",
                sort_column(*f, &state),
                if *desc { "DESC" } else { "ASC" }
            )
        })
        .chain(std::iter::once("id ASC".to_string()))
        .collect();
    format!(
        "ORDER BY {} LIMIT {} OFFSET {}",
        order.join(", "),
        q.limit,
        q.offset.min(i64::MAX as u64)
    )
}

/// A registrations CRN pattern (`*` = any run) as a SQL `LIKE` pattern with `\` escapes.
pub(crate) fn crn_like(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The placeholder for `:now` in [`list_where`] (always the second parameter).
pub(crate) fn now_placeholder(dialect: Dialect) -> String {
    dialect.placeholder(2)
}

/// `refs` as stored: space-separated with a space on each side, so
/// `refs LIKE '% <id> %'` finds objects that name `<id>` (ids hold no spaces).
pub(crate) fn refs_column(refs: &[String]) -> String {
    format!(" {} ", refs.join(" "))
}

pub(crate) fn refs_parse(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// The LIKE pattern matching objects whose refs name `id` (LIKE's wildcards escaped).
pub(crate) fn refs_like(id: &str) -> String {
    let escaped: String = id
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("% {escaped} %")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        let q = ListKeys::from_query([("search", "abc")], Some("ring".into())).unwrap();
        let w = list_where(Dialect::Postgres, "i", &q, 5);
        assert!(w.clause.contains("$3") && w.clause.contains("strpos"));
        assert_eq!(w.params.len(), 4);
        let w = list_where(Dialect::Sqlite, "i", &q, 5);
        assert!(w.clause.contains("?3") && w.clause.contains("instr"));
    }

    #[test]
    fn crn_patterns_escape_like_metacharacters() {
        assert_eq!(crn_like("crn:v1:a_b%:*"), "crn:v1:a\\_b\\%:%");
    }
}
