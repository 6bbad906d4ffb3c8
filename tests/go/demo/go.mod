module stacksampler.test/demo

go 1.19
