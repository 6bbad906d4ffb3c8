module stacksampler.test/deep

go 1.19
