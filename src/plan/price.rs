//! What a row costs: the plan's pricing applied to the request a row sends.
//!
//! Why this exists apart: the plan holds the prices; the run budgets by them
//! and the output records them, and neither should own them.

use super::{Plan, Request, Row};
use crate::vocab::Usd;

impl Plan {
    /// What a row costs if every image it asks for is made.
    pub fn row_price(&self, row: &Row) -> Usd {
        self.request_price(&self.request(row))
    }

    /// What `req` costs if every image it asks for is made.
    pub fn request_price(&self, req: &Request) -> Usd {
        self.pricing
            .per_image(req.kind())
            .times(u64::from(req.images()))
    }
}
