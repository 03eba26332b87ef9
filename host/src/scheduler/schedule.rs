//! Schedules and their fire times (being written).
