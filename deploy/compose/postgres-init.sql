-- First start of the compose Postgres only: each service owns its own database.
-- (POSTGRES_DB already created lalo_gateway.)
CREATE DATABASE lalo_orchestrator;
