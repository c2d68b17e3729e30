"""Secrets: references resolved just in time, never written to disk or logs.

Module by module:

    providers.py  secret references and their providers (local, env, file, Vault, AWS
                  Secrets Manager and SSM): the value a reference names, read when asked
    local.py      the embedded provider `secret://local/NAME`: an encrypted store per env
    resolver.py   secrets delivered to instances: resolved at start, kept in memory, audited
    redact.py     masking secret values in output, logs and error messages
    errors.py     the error every provider raises: names the secret, never a value
"""
