module sidecarsession/example

go 1.19

require sidecarsession v0.0.0

replace sidecarsession => ../sidecarsession
