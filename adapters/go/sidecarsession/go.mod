module sidecarsession

go 1.19
