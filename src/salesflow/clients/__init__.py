"""How the CLI and the services talk to the services: HTTP clients, no service package imported.

- `upload`: the upload service's client; `jobs`: the job server's client;
- `followup`: upload with a progress bar and follow the job to its end;
- `status`: one look at every service, the broker and the active model.
"""
