# Conveniences for machines that have make; ./dev is the source of truth.
.PHONY: demo test setup
demo:
	./dev demo
test:
	./dev test
setup:
	./dev setup
