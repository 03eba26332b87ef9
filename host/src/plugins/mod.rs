//! The plugins folder (being written).
