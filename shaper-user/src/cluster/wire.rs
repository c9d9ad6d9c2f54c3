//! A host's report as stored: a fixed header and one little-endian `f32` per roster tenant
//! (400 kB for 100,000 tenants; names are not repeated, the roster's digest stands for them).

/// One host's demand for one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub host: String,
    pub epoch: u64,
    /// The digest of the roster `demand` is ordered by.
    pub roster: u64,
    /// Bytes/s per roster tenant.
    pub demand: Vec<f32>,
}

const MAGIC: &[u8; 4] = b"SHC1";

pub fn encode(r: &Report) -> Vec<u8> {
    let host = &r.host.as_bytes()[..r.host.len().min(255)];
    let mut out = Vec::with_capacity(4 + 8 + 8 + 4 + 1 + host.len() + 4 * r.demand.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&r.epoch.to_le_bytes());
    out.extend_from_slice(&r.roster.to_le_bytes());
    out.extend_from_slice(&(r.demand.len() as u32).to_le_bytes());
    out.push(host.len() as u8);
    out.extend_from_slice(host);
    for d in &r.demand {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// `None` for anything that is not a whole report (another version, a stray key).
pub fn decode(b: &[u8]) -> Option<Report> {
    let rest = b.strip_prefix(MAGIC)?;
    let (epoch, rest) = rest.split_first_chunk::<8>()?;
    let (roster, rest) = rest.split_first_chunk::<8>()?;
    let (count, rest) = rest.split_first_chunk::<4>()?;
    let (len, rest) = rest.split_first()?;
    let host = std::str::from_utf8(rest.get(..usize::from(*len))?).ok()?;
    let body = &rest[usize::from(*len)..];
    let count = u32::from_le_bytes(*count) as usize;
    if body.len() != count.checked_mul(4)? {
        return None;
    }
    Some(Report {
        host: host.to_string(),
        epoch: u64::from_le_bytes(*epoch),
        roster: u64::from_le_bytes(*roster),
        demand: body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let r = Report {
            host: "edge-1".into(),
            epoch: 1_234_567,
            roster: 0xdead_beef,
            demand: vec![0.0, 1.5e6, f32::MAX],
        };
        let b = encode(&r);
        assert_eq!(decode(&b), Some(r));
        assert_eq!(decode(&b[..b.len() - 1]), None, "truncated");
        assert_eq!(decode(b"SHC2whatever"), None, "another version");
        assert_eq!(decode(&[]), None);
    }
}
