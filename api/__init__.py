"""smsgw's HTTP API: gateway records, sending, and delivery receipts."""
