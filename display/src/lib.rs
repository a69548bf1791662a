//! outlet-display (under construction).
