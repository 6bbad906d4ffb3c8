module faults

go 1.19
