"""The paper-style table's rows, picked from curve points."""

from latlib.pipeline.curves import SMALLEST_ROW, STANDARD_ROW, CurvePoint, table_points


def _point(config: tuple[int, ...], macs: float, score: float) -> CurvePoint:
    return CurvePoint("LAT + evolutionary search", config, macs, macs * 5, score)


STANDARD = CurvePoint("standard + constant rate", (8, 8), 10.0, 50.0, 90.0)
LAT_FULL = CurvePoint("LAT", (8, 8), 10.0, 50.0, 89.8)
SEARCHED = [_point((8, 6), 8.0, 90.2), _point((7, 5), 6.0, 89.6), _point((6, 3), 4.0, 88.0)]
SMALLEST = CurvePoint(SMALLEST_ROW, (6, 5), 5.0, 25.0, 87.0)


def test_the_rows_are_standard_full_best_cheapest_within_tolerance_and_smallest():
    rows = table_points(STANDARD, LAT_FULL, SEARCHED, SMALLEST, tolerance=0.5)
    names = [name for name, _ in rows]
    assert names[0] == STANDARD_ROW and names[-1] == SMALLEST_ROW
    assert names[3] == "LAT, cheapest within 0.5 of standard"
    points = [point for _, point in rows]
    assert points[:2] == [STANDARD, LAT_FULL]
    assert points[2] == SEARCHED[0]  # the best score
    assert points[3] == SEARCHED[1]  # 89.6 >= 90.0 - 0.5; the cheaper 88.0 is not
    assert points[4] == SMALLEST


def test_no_point_within_tolerance_leaves_that_row_empty():
    rows = dict(table_points(STANDARD, LAT_FULL, SEARCHED[2:], SMALLEST, tolerance=0.5))
    assert rows["LAT, cheapest within 0.5 of standard"] is None
