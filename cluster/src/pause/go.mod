// The sandbox ("pause") container of `make cluster`, built here because no image can be pulled.
module shardscore/cluster/pause

go 1.25.0
