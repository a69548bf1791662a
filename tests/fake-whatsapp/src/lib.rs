//! fake-whatsapp (under construction).
