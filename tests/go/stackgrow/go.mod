module stackgrow

go 1.19
