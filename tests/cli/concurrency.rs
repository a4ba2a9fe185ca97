//! Several hypod processes on one database at once.
