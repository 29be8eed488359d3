//! The ground floor: the vocabulary every stage shares (row keys, money,
//! kinds of request, tickets, the codes written in results.csv, and exit codes).
//!
//! Why this exists: these types are used from the manifest's plan to the
//! report, and a type defined in one stage and used by a lower one draws an
//! arrow back up the house. Nothing here imports anything from the crate,
//! so every other module may import from here and nothing here can form a
//! circle.

mod code;
pub mod exit_code;
mod key;
mod kind;
mod money;
mod ticket;
mod time;

pub use code::{Code, NotOurCode};
pub use key::{Key, Shard};
pub use kind::Kind;
pub use money::Usd;
pub use ticket::Ticket;
pub use time::rfc3339;
