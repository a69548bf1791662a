//! outlet-agent (under construction).
