-- Scale the storefront the way an autoscaler would, from CPU, with a floor of 2.
RULE storefront-autoscale
ON cpu(service='storefront') > 70% FOR 1m
DO SCALE 'storefront' TO max(ceil(instances * cpu() / 60%), 2)
LIMIT 10
COOLDOWN 2m;

-- Give capacity back when it has been quiet for a while, never below 2.
RULE storefront-shrink
ON low_cpu(<20%, service='storefront') FOR 10m
DO SCALE 'storefront' TO instances - 1
LIMIT 2;

-- Slow checkouts: tell the team, but do not act (yet).
RULE slow-storefront
ON latency(p99, service='storefront') > 300ms FOR 2m
DO NOTIFY 'storefront p99 is {value} on {release.version}'
DRY RUN;

-- A payment gateway that keeps crashing gets restarted once, and someone is told.
RULE payments-crashing
ON restarts(service='payment-gateway') > 3 FOR 5m
DO RESTART 'payment-gateway',
   NOTIFY '{service.name} restarted more than 3 times in 5 minutes'
COOLDOWN 15m;
