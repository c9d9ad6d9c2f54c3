//! Equal-length rings of forecasts, one per model (or mix), kept in one allocation: a
//! tenant's forecaster had a vector per ring, each a separate cache miss when its update
//! came round (and 40 bytes of header and allocator overhead). Saved as before, a list of
//! lists, so saved forecasters load either way.
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rings {
    /// Slots per ring.
    len: usize,
    values: Vec<f64>,
}

impl Rings {
    /// `count` rings of `len` slots, each slot `fill`.
    pub fn new(count: usize, len: usize, fill: f64) -> Rings {
        Rings {
            len,
            values: vec![fill; count * len],
        }
    }

    /// How many rings.
    pub fn count(&self) -> usize {
        self.values.len().checked_div(self.len).unwrap_or(0)
    }

    /// Slots per ring.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Ring `k`'s slot `slot`, if both exist.
    #[inline]
    pub fn get(&self, k: usize, slot: usize) -> Option<f64> {
        if slot >= self.len {
            return None;
        }
        self.values.get(k * self.len + slot).copied()
    }

    /// Sets ring `k`'s slot `slot` (nothing if either does not exist).
    #[inline]
    pub fn set(&mut self, k: usize, slot: usize, v: f64) {
        if slot < self.len
            && let Some(x) = self.values.get_mut(k * self.len + slot)
        {
            *x = v;
        }
    }

    /// Ring `k`'s slots.
    pub fn ring_mut(&mut self, k: usize) -> &mut [f64] {
        let n = self.values.len();
        &mut self.values[(k * self.len).min(n)..((k + 1) * self.len).min(n)]
    }

    /// Every slot of every ring.
    pub fn all_mut(&mut self) -> &mut [f64] {
        &mut self.values
    }

    /// Every slot of every ring, for prefetching.
    pub fn all(&self) -> &[f64] {
        &self.values
    }
}

impl Serialize for Rings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.values.chunks(self.len.max(1)))
    }
}

impl<'de> Deserialize<'de> for Rings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rings, D::Error> {
        let nested: Vec<Vec<f64>> = Vec::deserialize(d)?;
        let len = nested.first().map_or(0, Vec::len);
        if nested.iter().any(|r| r.len() != len) {
            return Err(serde::de::Error::custom("rings of different lengths"));
        }
        Ok(Rings {
            len,
            values: nested.into_iter().flatten().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_saved_as_lists_of_lists_and_load_back() {
        let mut r = Rings::new(3, 4, -1.0);
        r.set(1, 2, 7.0);
        r.set(2, 3, 9.0);
        r.set(3, 0, 1.0); // no fourth ring: ignored
        r.set(0, 4, 1.0); // no fifth slot: ignored
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(
            json,
            "[[-1.0,-1.0,-1.0,-1.0],[-1.0,-1.0,7.0,-1.0],[-1.0,-1.0,-1.0,9.0]]"
        );
        let back: Rings = serde_json::from_str(&json).expect("loads");
        assert_eq!(back, r);
        assert_eq!((back.count(), back.len()), (3, 4));
        assert_eq!((back.get(1, 2), back.get(0, 4)), (Some(7.0), None));
        assert!(serde_json::from_str::<Rings>("[[1.0],[1.0,2.0]]").is_err());
    }
}
