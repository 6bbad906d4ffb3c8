module wallclock

go 1.19
