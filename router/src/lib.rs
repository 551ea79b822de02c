//! mailroom-router: see README.
