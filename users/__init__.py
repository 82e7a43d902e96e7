"""users: what one simulated agentws/1 client does. Runs in every Locust worker; never writes files."""
