//! Store: every tenant's cycle on disk (SQLite in WAL mode, one transaction a cycle), so the
//! forecasters warm-start after a restart and operators can export what happened. Rows are
//! keyed by interface, tenant and time: agents on several interfaces share one file.
use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store {path}: {source}")]
    Sql {
        path: String,
        source: rusqlite::Error,
    },
    #[error("history store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One tenant's cycle. Rates are bytes/s.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Unix time, seconds.
    pub ts: f64,
    pub tenant: String,
    pub offered: f64,
    pub passed: f64,
    pub dropped: f64,
    /// The forecast made for this cycle's successor: mean, low, high.
    pub forecast: Option<(f64, f64, f64)>,
    /// The fill rate and pre-allocated rate allocated for the next cycle.
    pub fill: Option<f64>,
    pub pre: Option<f64>,
}

impl Row {
    /// A cycle in which `tenant` offered `offered` bytes/s and all of it passed, with no
    /// forecast or allocation: history written before any agent ran (a replay's or the demo's
    /// earlier days, which the agent warm-starts from).
    pub fn unshaped(ts: f64, tenant: &str, offered: f64) -> Row {
        Row {
            ts,
            tenant: tenant.to_string(),
            offered,
            passed: offered,
            dropped: 0.0,
            forecast: None,
            fill: None,
            pre: None,
        }
    }
}

/// Rows deleted per transaction by [`Store::purge`].
pub const PURGE_BATCH: usize = 10_000;

pub struct Store {
    conn: Connection,
    path: String,
    iface: String,
}

impl Store {
    /// Opens (creating it and its directory if needed) the store at `path` for `iface`.
    pub fn open(path: &Path, iface: &str) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: name.clone(),
                source,
            })?;
        }
        let sql = |source| StoreError::Sql {
            path: name.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        // WAL: a killed agent loses at most the cycle being written, never what committed.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS history (
                iface TEXT NOT NULL, tenant TEXT NOT NULL, ts REAL NOT NULL,
                offered REAL NOT NULL, passed REAL NOT NULL, dropped REAL NOT NULL,
                f_mean REAL, f_lo REAL, f_hi REAL, fill REAL, pre REAL,
                PRIMARY KEY (iface, tenant, ts)
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS history_ts ON history (ts);",
        )
        .map_err(sql)?;
        Ok(Store {
            conn,
            path: name,
            iface: iface.to_string(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one cycle's rows in one transaction.
    pub fn append(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO history VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(sql)?;
            for r in rows {
                let (m, l, h) = match r.forecast {
                    Some((m, l, h)) => (Some(m), Some(l), Some(h)),
                    None => (None, None, None),
                };
                st.execute(params![
                    self.iface, r.tenant, r.ts, r.offered, r.passed, r.dropped, m, l, h, r.fill,
                    r.pre
                ])
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Deletes rows older than `before` (unix seconds), every interface, in batches of
    /// [`PURGE_BATCH`] rows (one short transaction each, found through the index on time), so
    /// a purge of millions of rows never holds the store for long. Returns how many.
    pub fn purge(&mut self, before: f64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .conn
                .execute(
                    "DELETE FROM history WHERE (iface, tenant, ts) IN
                     (SELECT iface, tenant, ts FROM history WHERE ts < ?1 LIMIT ?2)",
                    params![before, PURGE_BATCH as i64],
                )
                .map_err(self.err())?;
            total += n;
            if n < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Rows since `since` (unix seconds), of one tenant or all, oldest first.
    pub fn since(&self, tenant: Option<&str>, since: f64) -> Result<Vec<Row>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT ts, tenant, offered, passed, dropped, f_mean, f_lo, f_hi, fill, pre
                 FROM history WHERE iface = ?1 AND ts >= ?2 AND (?3 IS NULL OR tenant = ?3)
                 ORDER BY tenant, ts",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![self.iface, since, tenant], |r| {
                let f = match (r.get(5)?, r.get(6)?, r.get(7)?) {
                    (Some(m), Some(l), Some(h)) => Some((m, l, h)),
                    _ => None,
                };
                Ok(Row {
                    ts: r.get(0)?,
                    tenant: r.get(1)?,
                    offered: r.get(2)?,
                    passed: r.get(3)?,
                    dropped: r.get(4)?,
                    forecast: f,
                    fill: r.get(8)?,
                    pre: r.get(9)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// The last `n` (time, offered) samples of `tenant`, oldest first: what a forecaster
    /// warm-starts from.
    pub fn recent(&self, tenant: &str, n: usize) -> Result<Vec<(f64, f64)>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT ts, offered FROM history WHERE iface = ?1 AND tenant = ?2
                 ORDER BY ts DESC LIMIT ?3",
            )
            .map_err(self.err())?;
        let mut out = st
            .query_map(params![self.iface, tenant, n as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<(f64, f64)>, _>>()
            .map_err(self.err())?;
        out.reverse();
        Ok(out)
    }
}

/// Rows as CSV: `time,tenant,offered_bps,passed_bps,dropped_bps,forecast_bps,forecast_lo_bps,
/// forecast_hi_bps,fill_bps,pre_bps` (bits per second).
pub fn to_csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "time,tenant,offered_bps,passed_bps,dropped_bps,forecast_bps,forecast_lo_bps,forecast_hi_bps,fill_bps,pre_bps\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{:.0}", v * 8.0));
    for r in rows {
        let (m, l, h) = match r.forecast {
            Some((m, l, h)) => (Some(m), Some(l), Some(h)),
            None => (None, None, None),
        };
        s.push_str(&format!(
            "{:.3},{},{:.0},{:.0},{:.0},{},{},{},{},{}\n",
            r.ts,
            r.tenant,
            r.offered * 8.0,
            r.passed * 8.0,
            r.dropped * 8.0,
            opt(m),
            opt(l),
            opt(h),
            opt(r.fill),
            opt(r.pre)
        ));
    }
    s
}

/// Now as unix seconds: the history's clock (and the forecasters').
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Unix time that only moves forward at the monotonic clock's pace: the wall clock read once,
/// then the monotonic time since. What orders the forecasters' samples: an NTP step back would
/// otherwise make every sample "out of order" (forecasts frozen until the wall clock caught
/// up), and a step forward would read as hours of missing samples.
#[derive(Clone, Copy, Debug)]
pub struct SteadyClock {
    wall0: f64,
    mono0: std::time::Instant,
}

impl SteadyClock {
    pub fn new() -> SteadyClock {
        SteadyClock::starting_at(unix_now())
    }

    /// A clock that reads `wall0` now.
    pub fn starting_at(wall0: f64) -> SteadyClock {
        SteadyClock {
            wall0,
            mono0: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> f64 {
        self.wall0 + self.mono0.elapsed().as_secs_f64()
    }
}

impl Default for SteadyClock {
    fn default() -> Self {
        SteadyClock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forecasters' clock moves at the monotonic pace from where it started, whatever the
    /// wall clock does: started an hour ahead of it (history stored before NTP stepped the
    /// wall clock back), it stays an hour ahead, and successive reads always increase.
    #[test]
    fn steady_clock_moves_forward_from_its_start() {
        let ahead = unix_now() + 3600.0;
        let c = SteadyClock::starting_at(ahead);
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = c.now();
        assert!(a >= ahead && b > a && b - a < 1.0, "{ahead} {a} {b}");
        assert!(b > unix_now() + 3500.0);
    }

    fn row(ts: f64, tenant: &str, offered: f64) -> Row {
        Row {
            ts,
            tenant: tenant.into(),
            offered,
            passed: offered * 0.9,
            dropped: offered * 0.1,
            forecast: Some((offered, offered * 0.5, offered * 2.0)),
            fill: Some(100.0),
            pre: None,
        }
    }

    #[test]
    fn appends_queries_purges_and_survives_reopening() {
        let dir = std::env::temp_dir().join(crate::lab::unique_name("shaper-store-"));
        let path = dir.join("sub/history.db");
        {
            let mut s = Store::open(&path, "eth0").expect("open");
            for c in 0..10 {
                let ts = 1000.0 + c as f64;
                s.append(&[row(ts, "a", c as f64), row(ts, "b", 2.0 * c as f64)])
                    .expect("append");
            }
            let mut other = Store::open(&path, "eth1").expect("second interface");
            other.append(&[row(1005.0, "a", 99.0)]).expect("append");
        }
        // Reopened (a restart): everything committed is there, per interface.
        let mut s = Store::open(&path, "eth0").expect("reopen");
        let a = s.since(Some("a"), 1005.0).expect("since");
        assert_eq!(a.len(), 5);
        assert_eq!(a[0], row(1005.0, "a", 5.0));
        assert_eq!(s.since(None, 0.0).expect("all").len(), 20);
        assert_eq!(
            s.recent("b", 3).expect("recent"),
            vec![(1007.0, 14.0), (1008.0, 16.0), (1009.0, 18.0)]
        );
        assert_eq!(s.purge(1008.0).expect("purge"), 17);
        assert_eq!(s.since(None, 0.0).expect("all").len(), 4);
        let csv = to_csv(&s.since(Some("a"), 0.0).expect("since"));
        assert!(csv.starts_with("time,tenant,offered_bps"), "{csv}");
        assert!(csv.contains("1008.000,a,64,58,6,64,32,128,800,\n"), "{csv}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
