//! hypod: reads an ecommerce team's experiment history, analyses it, drafts the next
//! experiments worth running, checks them against governance, and queues them for people to
//! approve. It never launches anything.
//!
//! A run is a straight walk through the modules, in this order (see [`run`]):
//! [`history`] → [`analysis`] → [`proposer`] → [`validate`] → [`governance`] → [`queue`] (via
//! [`store`]).

pub mod analysis;
pub mod governance;
pub mod history;
pub mod proposer;
pub mod queue;
pub mod validate;
