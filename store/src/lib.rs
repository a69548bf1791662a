//! outlet-store (under construction).
