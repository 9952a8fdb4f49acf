"""Pure domain logic: grains and bucket maths, time zones, filters, query objects, planning. No I/O."""
