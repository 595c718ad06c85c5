"""Services of the software app: one module per area (catalogue, licences, jobs, runner, research collections)."""
