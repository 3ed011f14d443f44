"""The job engine: the table, its SQL, the rules, and the HTTP routes for generation jobs."""
