-- A fenced instance that opens a connection its egress does not allow is a finding,
-- whatever the connection was for: it is recorded, with where it went.
ON egress_denied(service='web') > 0
DO NOTIFY 'web opened a connection its egress does not allow';
