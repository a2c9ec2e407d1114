//! The PostgreSQL major versions pitrkit supports, in one table: what tells them apart in
//! the bytes pitrkit reads (WAL page magic) and in the SQL it sends (the backup functions
//! renamed in 15). Supporting the next major is one row here plus its test in the version
//! matrix (`tests/tests/integration/versions.rs`).

use std::path::PathBuf;

/// One supported major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Major {
    /// 13, 14, … as `server_version_num / 10000` gives it.
    pub number: u32,
    /// `XLOG_PAGE_MAGIC` of `src/include/access/xlog_internal.h`: every WAL page of this
    /// major starts with it, and it changes whenever the WAL format does.
    pub wal_page_magic: u16,
}

/// Every supported major, oldest first.
pub const SUPPORTED: [Major; 6] = [
    Major {
        number: 13,
        wal_page_magic: 0xD106,
    },
    Major {
        number: 14,
        wal_page_magic: 0xD10D,
    },
    Major {
        number: 15,
        wal_page_magic: 0xD110,
    },
    Major {
        number: 16,
        wal_page_magic: 0xD113,
    },
    Major {
        number: 17,
        wal_page_magic: 0xD116,
    },
    Major {
        number: 18,
        wal_page_magic: 0xD118,
    },
];

/// The major whose WAL pages start with `magic`.
pub fn by_page_magic(magic: u16) -> Option<Major> {
    SUPPORTED
        .iter()
        .copied()
        .find(|m| m.wal_page_magic == magic)
}

/// The supported major `number`.
pub fn by_number(number: u32) -> Option<Major> {
    SUPPORTED.iter().copied().find(|m| m.number == number)
}

/// "13, 14, 15, 16, 17 and 18", for messages that tell a user what this build supports.
pub fn supported_list() -> String {
    let numbers: Vec<String> = SUPPORTED.iter().map(|m| m.number.to_string()).collect();
    match numbers.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => numbers.join(""),
    }
}

impl Major {
    /// The SQL that starts a non-exclusive base backup with parameters (label, fast):
    /// PostgreSQL 15 renamed `pg_start_backup` and dropped exclusive backups.
    pub fn backup_start_sql(self) -> &'static str {
        if self.number >= 15 {
            "select pg_backup_start($1, $2)::text"
        } else {
            "select pg_start_backup($1, $2, false)::text"
        }
    }

    /// The function call that ends the backup without waiting for its WAL to be archived
    /// (pitrkit waits for the repository itself, with a bound); it yields the stop LSN,
    /// the backup_label and the tablespace_map.
    pub fn backup_stop_call(self) -> &'static str {
        if self.number >= 15 {
            "pg_backup_stop(false)"
        } else {
            "pg_stop_backup(false, false)"
        }
    }

    /// Where Debian and Ubuntu (postgresql-common) install this major's server binaries.
    pub fn debian_bindir(self) -> PathBuf {
        PathBuf::from(format!("/usr/lib/postgresql/{}/bin", self.number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_ordered_and_magics_are_distinct() {
        for pair in SUPPORTED.windows(2) {
            assert!(pair[0].number < pair[1].number);
            assert!(pair[0].wal_page_magic < pair[1].wal_page_magic);
        }
        assert_eq!(by_page_magic(0xD118).map(|m| m.number), Some(18));
        assert_eq!(by_page_magic(0xD119), None);
        assert_eq!(by_number(12), None);
        assert_eq!(supported_list(), "13, 14, 15, 16, 17 and 18");
    }

    #[test]
    fn backup_functions_follow_the_rename_in_15() {
        let m14 = by_number(14).expect("14");
        let m15 = by_number(15).expect("15");
        assert!(m14.backup_start_sql().contains("pg_start_backup"));
        assert!(m15.backup_start_sql().contains("pg_backup_start"));
        assert!(m14.backup_stop_call().starts_with("pg_stop_backup"));
        assert!(m15.backup_stop_call().starts_with("pg_backup_stop"));
    }
}
