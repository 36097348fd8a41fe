"""The foundation every package stands on: records, errors, settings, clocks, logs and the brand."""
