//! Policy files (`policies/*.toml`): parse with file:line:col errors, judge recipients, explain.
//!
//! (Being written: see issue 3.)
