"""gsasr_plugin.utils.scale: the one scale / size validation used by the nets, datasets, model and CLI."""
import pytest
import torch

from gsasr_plugin.utils.scale import (check_out_size, parse_scale_list_text, resolve_scale_and_size,
                                      scale_from_option, scale_tag, scaled_size, to_scale_pair)


def test_to_scale_pair_accepts_numbers_pairs_and_batch_tensors():
    assert to_scale_pair(3) == (3.0, 3.0) and to_scale_pair((2, 3.5)) == (2.0, 3.5)
    assert to_scale_pair(torch.tensor(2.5)) == (2.5, 2.5) and to_scale_pair((torch.tensor(2.0), 3)) == (2.0, 3.0)
    assert to_scale_pair(torch.tensor([[1.5, 2.0]] * 3)) == (1.5, 2.0)


@pytest.mark.parametrize('value, error', [(True, TypeError), ('2', TypeError), ((2, '3'), TypeError),
                                          ([1, 2, 3], TypeError), (0, ValueError), ((2, float('nan')), ValueError),
                                          (torch.ones(3), ValueError),
                                          (torch.tensor([[2.0, 2.0], [3.0, 3.0]]), ValueError)])
def test_to_scale_pair_errors_name_the_argument(value, error):
    with pytest.raises(error, match='my_arg'):
        to_scale_pair(value, 'my_arg')


def test_option_values_always_raise_value_error_naming_the_key():
    for bad in ('x', True, [1, 2, 3], -1):
        with pytest.raises(ValueError, match=r"'scales\[2\]'"):
            scale_from_option(bad, 'scales[2]')
    assert scale_tag(torch.tensor([2.0, 3.0])) == '2x3'


def test_sizes():
    assert scaled_size((10, 7), 0.1) == (1, 1) and scaled_size((10, 7), (1.5, 2)) == (15, 14)
    with pytest.raises(ValueError, match=r'scale 0.01 leaves no output pixel of 10 LR pixels \(round\(10 x 0.01\) = 0\)'):
        scaled_size((10, 7), 0.01)  # a 1 x 1 'output' was made before (issue 26, item 10)
    assert resolve_scale_and_size((10, 20), out_size=(30, 50)) == ((3.0, 2.5), (30, 50))
    assert resolve_scale_and_size((10, 20), scale=2, out_size=torch.tensor([31, 41])) == ((2.0, 2.0), (31, 41))
    with pytest.raises(ValueError, match='out_size'):
        check_out_size((3, 0))
    assert parse_scale_list_text('2, 1.5:3') == [(2.0, 2.0), (1.5, 3.0)]
    with pytest.raises(ValueError, match='--scales'):
        parse_scale_list_text(' , ')
