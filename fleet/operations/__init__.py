"""Running a deployment: backups and restore, `fleet doctor`."""
