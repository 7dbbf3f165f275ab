"""Anti-entropy planning (pure): what to send a member, given its version vector."""
