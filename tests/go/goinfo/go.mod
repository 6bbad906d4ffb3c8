module goinfo

go 1.19
