module symoracle

go 1.19
