module stacksampler/bench

go 1.19
