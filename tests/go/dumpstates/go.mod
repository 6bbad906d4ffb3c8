module dumpstates

go 1.19
