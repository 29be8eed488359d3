//! Money: exact amounts of US dollars.
//!
//! Why this exists apart: prices, budgets, totals and the journal's costs are
//! all added up in these units, and must agree to the micro-dollar.

use std::fmt;

/// An amount of US dollars, in whole micro-dollars so that totals are exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

impl Usd {
    pub const fn from_micros(m: u64) -> Usd {
        Usd(m)
    }

    pub fn micros(self) -> u64 {
        self.0
    }

    /// From a user-supplied dollar amount; `None` if negative or not finite.
    pub fn from_dollars(x: f64) -> Option<Usd> {
        (0.0..1e12)
            .contains(&x)
            .then(|| Usd((x * 1e6).round() as u64))
    }

    pub fn dollars(self) -> f64 {
        self.0 as f64 / 1e6
    }

    pub fn times(self, n: u64) -> Usd {
        Usd(self.0.saturating_mul(n))
    }
}

impl std::ops::Add for Usd {
    type Output = Usd;
    fn add(self, o: Usd) -> Usd {
        Usd(self.0.saturating_add(o.0))
    }
}

impl fmt::Display for Usd {
    /// `$1.25`; sub-cent amounts keep their digits (`$0.0125`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 1_000_000, self.0 % 1_000_000);
        let mut frac = format!("{frac:06}");
        while frac.len() > 2 && frac.ends_with('0') {
            frac.pop();
        }
        write!(f, "${whole}.{frac}")
    }
}

impl serde::Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.dollars())
    }
}
