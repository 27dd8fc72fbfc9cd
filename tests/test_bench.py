"""Benchmark helpers whose figures the README quotes."""
from ser_core import models
from ser_app import bench
from ser_core.tf_setup import keras as _keras


def test_forward_flops_count_conv_and_dense_multiply_adds():
    keras = _keras()
    inp = keras.Input((8, 10, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)            # 8*10*4 outputs x 3*3*3 taps
    x = keras.layers.MaxPooling2D(2)(x)                            # (4, 5, 4): not counted
    x = keras.layers.Reshape((4, 20))(x)
    x = keras.layers.Dense(6)(x)                                   # 4 positions x 20 -> 6
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(2)(x)                                 # 6 -> 2
    model = keras.Model(inp, out)
    assert bench.forward_flops(model) == 2 * (8 * 10 * 4 * 27 + 4 * 20 * 6 + 6 * 2)


def test_forward_flops_of_the_default_architecture_are_dominated_by_its_convolutions():
    model = models.build("ser_crnn", (64, 94, 3), 8, width=32, units=64)
    flops = bench.forward_flops(model)
    conv1 = 2 * 64 * 94 * 32 * 27                                   # first block alone, full resolution
    assert 1.5e8 < flops < 2.5e8 and flops > 10 * conv1


def test_an_ensemble_epoch_is_one_epoch_of_every_member_counted_as_often_as_it_appears(capsys):
    from ser_app.bench import _verdicts, ensemble_epoch

    def arch(project, plain, project_min, plain_min):
        return {"epochs": {"project": {"median_ms": project, "min_ms": project_min},
                           "plain": {"median_ms": plain, "min_ms": plain_min}}, "ratio": round(plain / project, 2)}

    training = {"a": arch(2000, 3600, 1800, 3400), "b": arch(3000, 9000, 2900, 8000)}
    d = ensemble_epoch(training, ["a", "a", "b"])
    assert d["median_ms"] == {"project": 7000, "plain": 16200, "ratio": 2.31}
    assert d["min_ms"] == {"project": 6500, "plain": 14800, "ratio": 2.28}
    assert "one epoch of every member 7.00 s vs 16.20 s plain, 2.31x" in capsys.readouterr().out
    lines = _verdicts({"training": training, "default_epoch": d})
    assert lines[0].startswith("  [ok] training epoch, default model (every member): 2.31x")
    assert lines[1].startswith("  [--] training epoch, a: 1.8x")
