"""A whole backlog: sources become items, items are packed into jobs, a ledger tracks them to the end."""
